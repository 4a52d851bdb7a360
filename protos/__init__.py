"""Protocol definitions: the .proto sources and the Python modules generated from them."""
