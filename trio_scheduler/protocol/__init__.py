"""Wire protocol: attrs message classes for both sockets and one codec for them."""
