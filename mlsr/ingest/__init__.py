"""Making index folders: from a folder of images, or from published dense vectors."""
