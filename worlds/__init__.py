"""Landing zones crossfade can run on: each module writes one world in the layout of README's Landing zone."""
