"""The Envoy gateway: one config template (`envoy.yaml.j2`) rendered for every environment."""
