"""Grammar and image autoencoders, their regularisers, and grammar-masked decoding."""
