using System.Security.Cryptography;
using MoeCluster.Client;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// The rows of docs/errors.md that the SDK and the router refuse: each refusal's type and exact
/// message, and that it changed nothing — the layer's counters, version and weights read the same
/// after it, and a layer trained through every refusal ends with the weights of the reference
/// trained without them.
/// </summary>
[Collection(SharedClusterCollection.Name)]
public class BadInputCatalogueTests(SharedClusterFixture fixture)
{
    private static readonly LayerSpec Spec = new() { DModel = 6, DFF = 8, NumExperts = 3, TopK = 2, MinCapacity = 1, Seed = 11 };

    /// <summary>Everything a refused call could have changed: counters, pending state, version, weights.</summary>
    private static async Task<string> State(RemoteMoeLayer layer)
    {
        var stats = await layer.GetStatsAsync();
        var weights = await layer.GetWeightsAsync();
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, t) in weights.OrderBy(w => w.Key, StringComparer.Ordinal))
        {
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            hash.AppendData(t.contiguous().bytes);
            t.Dispose();
        }
        var experts = string.Join("; ", stats.Experts.Select(e =>
            $"{e.Expert.Index}: v{e.Expert.Version} f{e.Expert.ForwardCalls} b{e.Expert.BackwardCalls} t{e.Expert.TokensProcessed} p{e.Expert.PendingForwards} r{e.TokensRouted} d{e.TokensDropped}"));
        return $"v{stats.Version} mb{stats.MicroBatches} pending{stats.PendingBatches} expired{stats.ExpiredBatches} [{experts}] {Convert.ToHexString(hash.GetHashAndReset())}";
    }

    /// <summary>Runs a call that must be refused with <typeparamref name="T"/> and <paramref name="message"/>, and checks that the layer is unchanged.</summary>
    private static async Task Refused<T>(RemoteMoeLayer layer, Func<Task> call, string message) where T : Exception
    {
        var before = await State(layer);
        var error = await Assert.ThrowsAsync<T>(call);
        Assert.Equal(message, error.Message);
        Assert.Equal(before, await State(layer));
    }

    private static Tensor With(Tensor t, int row, float value)
    {
        var copy = t.clone();
        copy[row, 1] = tensor(value);
        return copy;
    }

    [Fact]
    public async Task Every_refused_training_call_changes_nothing_and_the_run_ends_as_the_reference_without_them()
    {
        const string name = "catalogue-train";
        var layer = await fixture.Client.CreateLayerAsync(name, Spec);
        using var reference = new ReferenceTrainer(name, Spec);
        using var generator = new Generator(12);
        var silo = (await layer.GetStatsAsync()).Experts[0].Expert.Placement.Silo;
        long batch = 100;
        for (int step = 1; step <= 2; step++, batch++)
        {
            using var x = randn(7, Spec.DModel, generator: generator);
            using var dy = randn(7, Spec.DModel, generator: generator).mul_(0.1);

            // Forward: shape, dtype, NaN, Inf.
            using (var wide = ones(7, 5))
                await Refused<ArgumentException>(layer, () => layer.ForwardAsync(wide),
                    $"x has shape [7, 5]; layer \"{name}\" expects [tokens, 6] (Parameter 'x')");
            using (var doubles = x.to(ScalarType.Float64))
                await Refused<ArgumentException>(layer, () => layer.ForwardAsync(doubles),
                    $"x has dtype Float64; layer \"{name}\" expects Float32, BFloat16 or Float16 (Parameter 'x')");
            using (var nan = With(x, 3, float.NaN))
                await Refused<ArgumentException>(layer, () => layer.ForwardAsync(nan, batchId: batch),
                    "x holds 1 NaN and 0 infinite value(s), the first in row 3; expected finite numbers (checked because MoeClientOptions.ValidateInputs is on) (Parameter 'x')");
            using (var inf = With(x, 5, float.NegativeInfinity))
                await Refused<ArgumentException>(layer, () => layer.ForwardAsync(inf, train: false),
                    "x holds 0 NaN and 1 infinite value(s), the first in row 5; expected finite numbers (checked because MoeClientOptions.ValidateInputs is on) (Parameter 'x')");

            using var forward = await layer.ForwardAsync(x, batchId: batch);

            // Between forward and backward: a reused id, bad gradients, unknown batches, a step too early or too far.
            await Refused<InvalidOperationException>(layer, () => layer.ForwardAsync(x, batchId: batch),
                $"batch {batch} is already in flight on layer \"{name}\"; run its backward (or discard it) before reusing the id");
            using (var shortDy = ones(6, 6))
                await Refused<ArgumentException>(layer, () => layer.BackwardAsync(batch, shortDy),
                    "dy has shape [6, 6]; expected [7, 6] like the forward's output");
            using (var ints = ones(7, 6, ScalarType.Int32))
                await Refused<ArgumentException>(layer, () => layer.BackwardAsync(batch, ints),
                    $"dy has dtype Int32; layer \"{name}\" expects Float32, BFloat16 or Float16 (Parameter 'dy')");
            using (var nanDy = With(dy, 0, float.NaN))
                await Refused<ArgumentException>(layer, () => layer.BackwardAsync(batch, nanDy),
                    "dy holds 1 NaN and 0 infinite value(s), the first in row 0; expected finite numbers (checked because MoeClientOptions.ValidateInputs is on) (Parameter 'dy')");
            await Refused<ArgumentException>(layer, () => layer.BackwardAsync(batch, dy, auxGrad: double.PositiveInfinity),
                "∂L/∂aux is Infinity; expected a finite number (Parameter 'auxGrad')");
            await Refused<InvalidOperationException>(layer, () => layer.BackwardAsync(999, dy),
                $"no training forward is pending for batch 999 on layer \"{name}\": it never ran with train = true, its backward already ran, or it expired");
            await Refused<InvalidOperationException>(layer, () => layer.StepAsync(step),
                $"step {step} cannot be applied to layer \"{name}\": 1 training micro-batch(es) have not finished their backward (ids {batch}); run their backward or discard them first");
            await Refused<InvalidOperationException>(layer, () => layer.StepAsync(step + 1),
                $"step {step + 1} cannot be applied to layer \"{name}\" at version {step - 1}; steps are applied in order, next is {step}");

            using var dx = await layer.BackwardAsync(batch, dy);
            await Refused<InvalidOperationException>(layer, () => layer.BackwardAsync(batch, dy),
                $"no training forward is pending for batch {batch} on layer \"{name}\": it never ran with train = true, its backward already ran, or it expired");

            using (reference.ForwardBackward(batch, x, dy, 1.0, out var expectedDx)) expectedDx.Dispose();
            reference.Step();
            Assert.Equal(step, await layer.StepAsync(step));
            // An old step id is ignored: the same version comes back and nothing changes.
            var applied = await State(layer);
            Assert.Equal(step, await layer.StepAsync(step));
            if (step > 1) Assert.Equal(step, await layer.StepAsync(step - 1));
            Assert.Equal(applied, await State(layer));
        }

        // Expert ids out of range, in every call that names one.
        await Refused<ArgumentException>(layer, () => layer.MoveExpertAsync(3, silo),
            $"expert 3 cannot be moved: layer \"{name}\" has experts 0..2");
        await Refused<ArgumentException>(layer, () => layer.SplitExpertAsync(-1),
            $"expert -1 cannot be split: layer \"{name}\" has experts 0..2");
        await Refused<ArgumentException>(layer, () => layer.RemoveExpertsAsync(7),
            $"expert(s) 7 cannot be removed: layer \"{name}\" has experts 0..2");
        await Refused<ArgumentException>(layer, () => layer.SetTrainingControlsAsync(new TrainingControls { FrozenExperts = [3] }),
            $"frozen expert 3 does not exist; layer \"{name}\" has experts 0..2");

        TensorCompare.WeightsClose(await layer.GetWeightsAsync(), reference.Weights(), 1e-5);
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task A_micro_batch_over_the_message_limit_is_refused_before_it_is_sent()
    {
        const string name = "catalogue-limit";
        var layer = await fixture.Client.CreateLayerAsync(name, Spec);
        Assert.Equal(100 * 1024 * 1024, fixture.Client.MaxMessageBytes); // Orleans' default MaxMessageBodySize
        // 4.4 M tokens × 6 × 4 bytes = 105.6 MB: over the 100 MiB a message may carry. Never filled: refused by size alone.
        using var huge = empty(4_400_000, Spec.DModel);
        const string message = "x of shape [4400000, 6] needs messages of 105600000 bytes; one call to the cluster carries at most 103809024 " +
            "(Orleans' MaxMessageBodySize 104857600 less 1 MiB); split it into micro-batches of at most 4325376 tokens (Parameter 'x')";
        await Refused<ArgumentException>(layer, () => layer.ForwardAsync(huge), message);
        await Refused<ArgumentException>(layer, () => layer.ForwardAsync(huge, train: false), message);
        // A micro-batch under the limit goes through.
        using var fits = zeros(4_325_376 / 64, Spec.DModel);
        using (await layer.ForwardAsync(fits, train: false)) { }
        await layer.DeleteAsync();
    }

    public static TheoryData<LayerSpec, string> SpecsOutOfRange() => new()
    {
        { Spec with { NumExperts = 0 }, "E (number of experts) is 0; expected 1 ≤ E ≤ 4096" },
        { Spec with { NumExperts = 4097 }, "E (number of experts) is 4097; expected 1 ≤ E ≤ 4096" },
        { Spec with { TopK = 0 }, "k (top-k) is 0; expected 1 ≤ k ≤ E = 3" },
        { Spec with { TopK = 4 }, "k (top-k) is 4; expected 1 ≤ k ≤ E = 3" },
        { Spec with { DModel = 0 }, "d_model is 0; expected a positive size" },
        { Spec with { DFF = -8 }, "d_ff is -8; expected a positive size" },
        { Spec with { CapacityFactor = -0.5 }, "capacity factor is -0.5; expected a finite number ≥ 0 (0 = dropless)" },
        { Spec with { EvalCapacityFactor = double.NaN }, "eval capacity factor is NaN; expected a finite number ≥ 0 (0 = dropless)" },
        { Spec with { MinCapacity = -1 }, "min_capacity is -1; expected ≥ 0" },
        { Spec with { MaxPendingBatches = 0 }, "pending micro-batch limit is 0; expected ≥ 1" },
        { Spec with { CheckpointEvery = 0 }, "checkpoint interval is 0; expected ≥ 1 (steps between checkpoints)" },
        { Spec with { SavedForwardTimeout = TimeSpan.Zero }, "saved-forward timeout is 00:00:00; expected a positive time" },
    };

    [Theory]
    [MemberData(nameof(SpecsOutOfRange))]
    public async Task A_spec_out_of_range_creates_nothing(LayerSpec spec, string message)
    {
        var name = $"catalogue-spec-{Math.Abs(message.GetHashCode()) % 100000}";
        var slotsBefore = (await fixture.Client.GetSlotUsageAsync()).Sum(u => u.Leased);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => fixture.Client.CreateLayerAsync(name, spec));
        Assert.Equal(message, error.Message);
        Assert.DoesNotContain(name, await fixture.Client.ListLayersAsync());
        Assert.Null(await fixture.Client.Orleans.GetGrain<IMoeRouterGrain>(name).GetSpec());
        Assert.Equal(slotsBefore, (await fixture.Client.GetSlotUsageAsync()).Sum(u => u.Leased));
    }

    [Fact]
    public async Task An_unknown_layer_is_a_clear_error_from_the_SDK_and_the_router_and_is_not_created()
    {
        var missing = await Assert.ThrowsAsync<InvalidOperationException>(() => fixture.Client.GetLayerAsync("catalogue-nowhere"));
        Assert.Equal("layer \"catalogue-nowhere\" does not exist; create it first", missing.Message);
        var router = fixture.Client.Orleans.GetGrain<IMoeRouterGrain>("catalogue-nowhere");
        using var x = ones(2, 6);
        var forward = await Assert.ThrowsAsync<InvalidOperationException>(() => router.Forward(1, TensorPayloadOf(x), true));
        Assert.Equal("layer \"catalogue-nowhere\" does not exist; create it first", forward.Message);
        var step = await Assert.ThrowsAsync<InvalidOperationException>(() => router.Step(1));
        Assert.Equal("layer \"catalogue-nowhere\" does not exist; create it first", step.Message);
        Assert.DoesNotContain("catalogue-nowhere", await fixture.Client.ListLayersAsync());
        Assert.Null(await router.GetSpec());
    }

    [Fact]
    public async Task The_router_refuses_a_payload_whose_bytes_do_not_match_its_shape()
    {
        const string name = "catalogue-payload";
        var layer = await fixture.Client.CreateLayerAsync(name, Spec);
        var router = fixture.Client.Orleans.GetGrain<IMoeRouterGrain>(name);
        await Refused<ArgumentException>(layer, () => router.Forward(1, new TensorPayload([2, 6], TensorDType.F32, new byte[40]), true),
            "x of shape [2, 6] F32 has 40 bytes; expected 48");
        await Refused<ArgumentException>(layer, () => router.Forward(1, new TensorPayload([12], TensorDType.F32, new byte[48]), true),
            "x must be 2-D [tokens, d_model]; got shape [12]");
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task With_validation_off_non_finite_values_are_sent_and_computed()
    {
        var unchecked_ = MoeClusterClient.FromClusterClient(fixture.Client.Orleans, validateInputs: false);
        Assert.False(unchecked_.ValidatesInputs);
        Assert.True(fixture.Client.ValidatesInputs);
        var layer = await unchecked_.CreateLayerAsync("catalogue-unchecked", Spec with { CapacityFactor = 0 });
        using var x = ones(4, 6);
        x[2, 0] = tensor(float.NaN);
        using var forward = await layer.ForwardAsync(x, train: false);
        Assert.True(forward.Y[2].isnan().any().item<bool>());
        await layer.DeleteAsync();
    }

    private static TensorPayload TensorPayloadOf(Tensor t) =>
        new(t.shape, TensorDType.F32, t.to(ScalarType.Float32).contiguous().bytes.ToArray());
}
