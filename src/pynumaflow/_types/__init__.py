"""Public datatypes, the bottom layer: stdlib only, importing nothing of ours."""
