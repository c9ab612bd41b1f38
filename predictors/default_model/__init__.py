"""The bundled output-length model (``output_length.json.gz``), built by ``sluice predict train``."""
