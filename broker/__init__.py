from broker._cel import load_cel

load_cel()  # before any module of the broker imports `cel` (see broker/_cel.py)
