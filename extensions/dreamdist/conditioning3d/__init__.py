"""The 3D conditioning: one sample of a distribution seen from threestudio's view directions, and the
cache of distributions trained from a reference folder for 3D runs."""
