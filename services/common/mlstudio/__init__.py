"""ML Studio: the shared library (`mlstudio.common`) and the generated protobuf stubs
(`mlstudio.<service>.v1`, produced by `make protos` from `protos/`)."""
