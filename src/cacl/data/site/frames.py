"""The frames of a camera, read once in order: an image sequence, or a video decoded with PyAV.

:func:`read_frames` yields ``(frame, image)`` for the 1-based frame numbers asked for, in
increasing order, in one pass: a video is decoded from its start (frames that no box needs are
decoded but not converted), an image sequence opens only the files it needs. Frames numbered past
the video's end are simply not yielded; :class:`FrameReader.decoded` and :attr:`last_frame` say
how far it got.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from PIL import Image

from cacl.data.site.layout import CameraSource
from cacl.errors import DatasetError


class FrameReader:
    """Frames of one camera; ``frame_rate`` and ``size`` are known once :meth:`open` ran."""

    def __init__(self, camera: CameraSource):
        self.camera = camera
        self.decoded = 0
        self.last_frame = 0
        self.frame_rate = camera.frame_rate
        self.size = (camera.width, camera.height) if camera.width else None
        self._container = None

    def open(self) -> FrameReader:
        if self.camera.video is None:
            return self
        try:
            import av
        except ImportError as exc:  # pragma: no cover - av is a dependency
            raise DatasetError(
                "reading videos needs PyAV: pip install av (it ships its own codecs)"
            ) from exc
        try:
            self._container = av.open(str(self.camera.video))
        except (av.error.FFmpegError, OSError) as exc:
            raise DatasetError(f"{self.camera.video}: cannot open the video: {exc}") from exc
        if not self._container.streams.video:
            raise DatasetError(f"{self.camera.video}: no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise DatasetError(f"{self.camera.video}: the video stream has no frame rate")
        self.frame_rate = float(rate)
        self.size = (stream.codec_context.width, stream.codec_context.height)
        return self

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> FrameReader:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, frames: Iterable[int]) -> Iterator[tuple[int, Image.Image]]:
        """``(frame, RGB image)`` for each wanted 1-based frame that exists, in order."""
        wanted = sorted(set(int(f) for f in frames))
        if not wanted:
            return
        if self.camera.video is None:
            yield from self._images(wanted)
        else:
            yield from self._video(wanted)

    def _images(self, wanted: list[int]) -> Iterator[tuple[int, Image.Image]]:
        length = self.camera.length or 0
        for frame in wanted:
            if length and frame > length:
                break
            path = self.camera.frame_path(frame)
            if not path.is_file():
                if length:
                    raise DatasetError(
                        f"{path} is missing, but seqinfo.ini says the sequence has {length} frames"
                    )
                break
            try:
                with Image.open(path) as image:
                    rgb = image.convert("RGB")
            except OSError as exc:
                raise DatasetError(f"{path}: cannot read the frame: {exc}") from exc
            self.decoded += 1
            self.last_frame = frame
            yield frame, rgb

    def _video(self, wanted: list[int]) -> Iterator[tuple[int, Image.Image]]:
        import av

        assert self._container is not None, "open() first"
        position = 0
        pending = iter(wanted)
        target = next(pending)
        try:
            for decoded in self._container.decode(video=0):
                position += 1
                self.decoded = position
                self.last_frame = position
                if position < target:
                    continue
                yield position, decoded.to_image()
                target = next(pending, None)
                if target is None:
                    return
        except av.error.FFmpegError as exc:
            raise DatasetError(
                f"{self.camera.video}: decoding failed after frame {position}: {exc}"
            ) from exc
