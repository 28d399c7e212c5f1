"""What the public faces share: the kind table and the server base they configure."""
