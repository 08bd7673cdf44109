namespace MoeCluster;

/// <summary>
/// A read-only copy of one expert's weights on a device slot of its own, for inference: the
/// router sends it a share of that expert's tokens. Key: (expert id, "layer#replica"). It holds
/// exactly one version of the weights and refuses a call for another, so it never serves stale
/// weights; the router loads it again after every step.
/// </summary>
public interface IExpertReplicaGrain : IGrainWithIntegerCompoundKey
{
    /// <summary>Takes the weights of <paramref name="state"/> (what <see cref="IMoeExpertGrain.ExportState"/> returned) as version <paramref name="version"/>.</summary>
    Task<ExpertPlacement> Load(LayerSpec spec, byte[] state, long version);

    /// <summary>FFN of the rows sent, at <paramref name="version"/> (inference only).</summary>
    Task<TensorPayload> Forward(TensorPayload x, long version);

    /// <summary>Frees the copy and its device slot.</summary>
    Task Delete();

    [Orleans.Concurrency.AlwaysInterleave]
    Task<ExpertReplica> GetStats();
}

/// <summary>One replica of an expert: where it is, the version it holds, and the rows it computed.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpertReplica(
    [property: Id(0)] int Expert,
    [property: Id(1)] int Replica,
    [property: Id(2)] ExpertPlacement Placement,
    [property: Id(3)] long Version,
    [property: Id(4)] long TokensProcessed);
