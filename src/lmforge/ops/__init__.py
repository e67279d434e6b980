"""Pure tensor functions; each fast path sits beside its naive reference."""
