"""Host side of images: references, registry client, content store, unpack, snapshots."""
