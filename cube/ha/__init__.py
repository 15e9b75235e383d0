"""Several managers, one leader, on etcd (docs/ha.md): the election and its fencing."""
