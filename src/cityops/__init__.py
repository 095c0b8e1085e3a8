"""CityOps: an open smart-city integrated platform."""

__version__ = "0.1.0"
