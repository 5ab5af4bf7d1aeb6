"""Test support shipped with the package: the local control plane and the EC2 emulator harnesses."""
