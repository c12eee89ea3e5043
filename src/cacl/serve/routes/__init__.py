"""The routes of ``cacl serve``, one router per concern, over one :class:`~cacl.serve.state.ServeState`:

- :mod:`.pages`: the page, its assets and the token login;
- :mod:`.search`: searches by an indexed image, an uploaded crop or a crop's id; the stats;
- :mod:`.images`: adding images, the gallery listing, and the bytes of what was indexed;
- :mod:`.labels`: the labelling view's API (marks, merges, undo, suggestions).
"""
