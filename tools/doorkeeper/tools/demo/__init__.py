"""`doorkeeper demo`: a hub and three doors on loopback, told as a story."""
