"""File formats read and written by mlsr: image folders with captions, the lsr42 dense datasets, AToMiC."""
