"""Low-bit weights for the one model: RTN, GPTQ, AWQ and HQQ grids, packed QuantLinear layers, exporters."""

DEFAULT_CALIBRATION = "mixed"  # calibration text of GPTQ and AWQ (see quant.calibration)
DEFAULT_WINDOWS, DEFAULT_WINDOW_LEN = 128, 512  # calibration windows and tokens per window
