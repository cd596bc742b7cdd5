import CSystemShims

/// Hands memory the allocator holds free back to the kernel (glibc keeps freed blocks in its arenas; after a
/// burst that is resident memory nothing uses). Cheap enough for a sweep every few seconds.
public func returnFreeMemoryToTheSystem() {
    pc_malloc_trim()
}
