"""One module per pipeline stage: decode -> domain -> outcomes. Thin."""
