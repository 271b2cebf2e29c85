"""Device profiles: one TOML file per board family (runtime, providers, rails, thermal zones)."""
