"""etcd access: the only layer that talks to etcd (store, keys, codecs, batcher,
session, informer)."""
