"""The demo: what it does (service), its term views, and the Gradio interface over them."""
