"""Labels a person gives (in cacl serve) and the evaluation splits made from them."""
