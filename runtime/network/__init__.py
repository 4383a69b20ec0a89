"""Pod networking on the host side: CNI invocation, netns pinning, pod DNS/hosts files."""
