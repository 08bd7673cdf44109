namespace MoeCluster;

/// <summary>A stored checkpoint failed its checksum or cannot be decoded. The message names the key, the version and what was wrong.</summary>
[GenerateSerializer]
public sealed class CheckpointCorruptException : Exception
{
    public CheckpointCorruptException(string message) : base(message) { }
}

/// <summary>
/// A checkpoint could not be written (the store is out of reach or full). The step that needed
/// it fails with this, and is not committed; repeating the step once the store is back writes it.
/// </summary>
[GenerateSerializer]
public sealed class CheckpointWriteException : Exception
{
    public CheckpointWriteException(string message) : base(message) { }
}
