"""Training a dense-to-sparse head by distillation from a frozen dense model (ECIR 2024 recipe)."""
