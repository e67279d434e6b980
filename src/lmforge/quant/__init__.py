"""Low-bit weights for the one model: RTN, GPTQ, AWQ and HQQ grids, packed QuantLinear layers, exporters."""
