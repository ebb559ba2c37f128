"""How commands run: on this machine (process), on a node (ssh), and Nix (one function per
operation). The lowest layer: it imports nothing else of nixherd but errors."""
