"""Every wire byte: the shared field library, and a codec per protocol generation."""
