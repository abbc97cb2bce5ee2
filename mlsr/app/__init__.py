"""The Gradio app: its screens, named API endpoints and MCP tools, wired over the search service (`mlsr.serving`)."""
