"""Entry logs on the door: the on-disk outbox (sealed to the data owner before it hits disk) and
the uploader that empties it to the hub."""
