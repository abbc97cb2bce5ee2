"""mlsr models inside sentence-transformers (the optional `st` extra): a `SparseEncoder` for text and images.

`input.MlsrInput` (the frozen backbone, text windows and images, the BERT vocabulary for `decode`) and
`head.D2SHead` (the sparse head) follow sentence-transformers' module contract; `assemble` builds the model in
memory (`Encoder.to_sparse_encoder`), writes it as a standard folder and pushes it. Importing this package
imports nothing; its modules import sentence_transformers and torch.
"""
