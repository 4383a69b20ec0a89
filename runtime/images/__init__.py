"""Host side of images: references, registry client, content store, unpack, snapshots.

Entry point for the CRI image service: `store.ImageStore`. On disk, under `<state_dir>/images/`:

- `blobs/sha256/<hex>`: verified blobs only (manifests, configs, layers as pulled);
- `ingest/<hex>`: partial downloads, flock-ed while written, resumed with Range;
- `snapshots/<chainid-hex>/fs`: one layer's diff each, an overlay lowerdir as is;
  `snapshots/.tmp-*` are unpacks in progress (flock-ed), renamed into place when verified;
- `images.json`: the image records, replaced atomically.

Layers are unpacked by `unpack` (all layers of a pull at once, each resolved against its
parents after they commit), which resolves every path with openat2
(RESOLVE_IN_ROOT) beneath the snapshot root, so a hostile layer cannot reach the host.
"""
