"""One blueprint per protocol. Each translates its wire format to `Service.detect` and back."""
