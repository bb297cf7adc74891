"""Real-scan benchmark (issue 20): reference masks and tissue maps from other tools, the models' figures
against them, denoising beside classical baselines. The real scans are the yardstick, never training data.

Metrics and grids (`metrics`, `grids`) need NumPy/SciPy/SimpleITK only; the references need the `bench`
extra (deepbet, antspyx, bm4d, dipy).
"""
