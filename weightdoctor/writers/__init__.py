"""The writers: streaming safetensors and torch zip files, atomic temp-sibling and staging-directory commits."""
