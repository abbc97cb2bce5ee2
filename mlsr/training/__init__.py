"""Training a dense-to-sparse head by distillation from a frozen dense model (ECIR 2024 recipe).

`config` (the settings, torch-free), `objectives` (loss and schedules), `head_init` (a new head),
`loop` (`train`), `validation`, `checkpoint`, `card` (the model card).
"""
