using System.Diagnostics;
using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// Export and import of a layer's weights in parts: a layer, and one expert of it, larger than
/// Orleans' message limit moves bit for bit; parts of any size give the same weights; an export
/// that a step overtakes and an import with parts missing are refused, and the missing import
/// changes nothing.
/// </summary>
[Collection(SharedClusterCollection.Name)]
public class WeightTransferTests(SharedClusterFixture fixture, ITestOutputHelper output)
{
    private static readonly LayerSpec Small = new() { DModel = 16, DFF = 24, NumExperts = 3, TopK = 2, Seed = 5 };

    private static void AssertBitIdentical(IReadOnlyDictionary<string, Tensor> actual, IReadOnlyDictionary<string, Tensor> expected)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, value) in expected)
        {
            Assert.Equal(value.dtype, actual[name].dtype);
            Assert.Equal(value.shape, actual[name].shape);
            using var expectedRows = value.contiguous(); // a view's elements in row-major order
            Assert.True(expectedRows.bytes.SequenceEqual(actual[name].bytes), $"{name} differs");
        }
    }

    private static void DisposeAll(Dictionary<string, Tensor> weights)
    {
        foreach (var t in weights.Values) t.Dispose();
    }

    [Fact]
    public async Task A_layer_of_304_MiB_with_experts_over_the_message_limit_is_exported_and_imported_bit_for_bit()
    {
        // Each expert: w1 [19456, 1024], b1, w2 [1024, 19456], b2 in Float32 = 152 MiB, over the 100 MiB limit.
        var spec = new LayerSpec { DModel = 1024, DFF = 19456, NumExperts = 2, TopK = 1, Seed = 11 };
        var source = await fixture.Client.CreateLayerAsync("transfer-large-source", spec);
        var target = await fixture.Client.CreateLayerAsync("transfer-large-target", spec with { Seed = 12 });
        try
        {
            var clock = Stopwatch.StartNew();
            var exported = await source.GetWeightsAsync();
            var exportSeconds = clock.Elapsed.TotalSeconds;
            try
            {
                var total = exported.Values.Sum(t => t.NumberOfElements * t.element_size());
                var largestExpert = exported.GroupBy(w => w.Key.Split('.')[0] == "experts" ? w.Key.Split('.')[1] : "gate")
                    .Max(g => g.Sum(w => w.Value.NumberOfElements * w.Value.element_size()));
                Assert.True(total >= 300L << 20, $"the layer has {total} bytes");
                Assert.True(largestExpert > fixture.Client.MaxMessageBytes, $"its largest expert has {largestExpert} bytes, the message limit is {fixture.Client.MaxMessageBytes}");

                clock.Restart();
                var version = await target.ImportWeightsAsync(exported);
                var importSeconds = clock.Elapsed.TotalSeconds;
                Assert.Equal(1, version);
                var imported = await target.GetWeightsAsync();
                try
                {
                    AssertBitIdentical(imported, exported);
                }
                finally
                {
                    DisposeAll(imported);
                }
                output.WriteLine($"{total / 1048576.0:F1} MiB in parts of {source.WeightPartBytes} bytes: export {exportSeconds:F2} s, import {importSeconds:F2} s (checkpoint included)");
            }
            finally
            {
                DisposeAll(exported);
            }
        }
        finally
        {
            await source.DeleteAsync();
            await target.DeleteAsync();
        }
    }

    [Fact]
    public async Task Parts_of_any_size_give_the_same_weights_both_ways()
    {
        var layer = await fixture.Client.CreateLayerAsync("transfer-parts", Small);
        var whole = await layer.GetWeightsAsync();
        layer.WeightPartBytes = 100; // w1 of 24 × 16 Float32 is 1,536 bytes: 16 parts, the last one shorter
        var inParts = await layer.GetWeightsAsync();
        AssertBitIdentical(inParts, whole);

        // Back in 7-byte parts (parts that cut elements in two), scaled so that the import is seen;
        // the matrices as non-contiguous views (a transposed copy transposed back), whose bytes
        // the SDK reads in row-major order all the same, leaving the caller's tensors as they were.
        var scaled = whole.ToDictionary(w => w.Key, w => w.Value.dim() == 2 ? w.Value.mul(2).t().contiguous().t() : w.Value.mul(2));
        Assert.Contains(scaled.Values, t => !t.is_contiguous());
        layer.WeightPartBytes = 7;
        Assert.Equal(1, await layer.ImportWeightsAsync(scaled));
        layer.WeightPartBytes = 4096;
        var after = await layer.GetWeightsAsync();
        AssertBitIdentical(after, scaled);
        foreach (var w in new[] { whole, inParts, scaled, after }) DisposeAll(w);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => layer.WeightPartBytes = 0);
        Assert.StartsWith("a weight part of 0 bytes; expected 1 to 103809024 (the message limit less 1 MiB)", error.Message);
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task An_export_overtaken_by_a_step_is_refused()
    {
        var layer = await fixture.Client.CreateLayerAsync("transfer-overtaken", Small);
        var router = fixture.Cluster.Cluster.Client.GetGrain<IMoeRouterGrain>("transfer-overtaken");
        var manifest = await router.GetWeightManifest();
        Assert.Equal(0, manifest.Version);
        Assert.Equal(["gate", "experts.0.w1", "experts.0.b1", "experts.0.w2", "experts.0.b2"], manifest.Weights.Take(5).Select(w => w.Name));
        Assert.Equal(16 * 3 * 4, manifest.Weights[0].ByteLength);
        Assert.Equal(64, (await router.ReadWeightPart(0, "experts.1.w1", 128, 64)).Length);

        using (var x = randn(8, 16))
        using (var forward = await layer.ForwardAsync(x))
        using (var dy = ones(8, 16))
        using (var dx = await layer.BackwardAsync(forward.BatchId, dy))
            await layer.StepAsync();

        var gate = await Assert.ThrowsAsync<InvalidOperationException>(() => router.ReadWeightPart(0, "gate", 0, 64));
        Assert.Equal("layer \"transfer-overtaken\" is at version 1; the export reads version 0 (a step ran since); export again", gate.Message);
        var expert = await Assert.ThrowsAsync<InvalidOperationException>(() => router.ReadWeightPart(0, "experts.1.w1", 128, 64));
        Assert.Equal("layer \"transfer-overtaken\" is at version 1; the export reads version 0 (a step ran since); export again", expert.Message);
        var unknown = await Assert.ThrowsAsync<ArgumentException>(() => router.ReadWeightPart(1, "experts.7.w1", 0, 4));
        Assert.Equal("layer \"transfer-overtaken\" has no weight \"experts.7.w1\"; expected gate and experts.{id}.* for ids 0..2", unknown.Message);
        var outside = await Assert.ThrowsAsync<ArgumentException>(() => router.ReadWeightPart(1, "experts.1.b2", 60, 8));
        Assert.Equal("bytes 60..68 of experts.1.b2 are out of range; it has 64 bytes", outside.Message);
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task An_import_with_a_part_missing_is_refused_at_its_commit_and_changes_nothing()
    {
        var layer = await fixture.Client.CreateLayerAsync("transfer-missing", Small);
        var router = fixture.Cluster.Cluster.Client.GetGrain<IMoeRouterGrain>("transfer-missing");
        var before = await layer.GetWeightsAsync();
        var manifest = await router.GetWeightManifest();
        var import = Guid.NewGuid();
        await router.BeginImport(import, manifest.Weights);
        await router.BeginImport(import, manifest.Weights); // a repeat changes nothing
        foreach (var w in manifest.Weights.Where(w => w.Name != "experts.2.w2"))
            await router.WriteImportPart(import, w.Name, 0, new byte[w.ByteLength]);
        var half = manifest.Weights.Single(w => w.Name == "experts.2.w2");
        await router.WriteImportPart(import, half.Name, 0, new byte[half.ByteLength / 2]);
        await router.WriteImportPart(import, half.Name, 0, new byte[half.ByteLength / 2]); // the same part again

        var overlapping = await Assert.ThrowsAsync<ArgumentException>(() => router.WriteImportPart(import, half.Name, 100, new byte[8]));
        Assert.Equal($"import {import}: bytes 100..108 of experts.2.w2 overlap the part at byte 0", overlapping.Message);
        var incomplete = await Assert.ThrowsAsync<InvalidOperationException>(() => router.CommitImport(import));
        Assert.Equal($"import {import}: expert transfer-missing/2 holds 768 of the 1536 bytes of experts.2.w2; send the missing parts, or begin the import again", incomplete.Message);
        var after = await layer.GetWeightsAsync();
        AssertBitIdentical(after, before);
        Assert.Equal(0, (await router.GetWeightManifest()).Version);

        // The rest arrives: the commit applies all of it, and a repeat of the commit answers the same version.
        await router.WriteImportPart(import, half.Name, half.ByteLength / 2, new byte[half.ByteLength / 2]);
        Assert.Equal(1, await router.CommitImport(import));
        Assert.Equal(1, await router.CommitImport(import));
        var zeroed = await layer.GetWeightsAsync();
        Assert.All(zeroed.Values, t => Assert.Equal(0, t.abs().sum().item<float>()));

        var wrongShape = await Assert.ThrowsAsync<ArgumentException>(() => router.BeginImport(Guid.NewGuid(),
            manifest.Weights.Select(w => w.Name == "experts.0.b1" ? w with { Shape = [25] } : w).ToArray()));
        Assert.Equal("imported tensor \"experts.0.b1\" has shape [25]; expected [24]", wrongShape.Message);
        var lacking = await Assert.ThrowsAsync<ArgumentException>(() => router.BeginImport(Guid.NewGuid(), manifest.Weights.Skip(1).ToArray()));
        Assert.Equal("the import lacks 1 weight(s) of layer \"transfer-missing\": gate", lacking.Message);
        var notBegun = await Assert.ThrowsAsync<InvalidOperationException>(() => router.WriteImportPart(Guid.Empty, "gate", 0, new byte[4]));
        Assert.Equal($"import {Guid.Empty} of layer \"transfer-missing\" is not in progress; begin it first (a newer import, a router that came back from its checkpoint, or no part within the layer's SavedForwardTimeout ends it)", notBegun.Message);
        foreach (var w in new[] { before, after, zeroed }) DisposeAll(w);
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task An_import_that_no_part_reaches_within_the_saved_forward_timeout_is_freed()
    {
        var layer = await fixture.Client.CreateLayerAsync("transfer-abandoned", Small with { SavedForwardTimeout = TimeSpan.FromSeconds(2) });
        var router = fixture.Cluster.Cluster.Client.GetGrain<IMoeRouterGrain>("transfer-abandoned");
        var expert = fixture.Cluster.Cluster.Client.GetGrain<IMoeExpertGrain>(1, "transfer-abandoned");
        var manifest = await router.GetWeightManifest();

        // A slow import that goes on: expert 1 has all its parts early, the others' come over 4 s
        // (two timeouts); expert 1 keeps its parts, since the router still sees parts arrive.
        var slow = Guid.NewGuid();
        await router.BeginImport(slow, manifest.Weights);
        foreach (var w in manifest.Weights.Where(w => w.Name.StartsWith("experts.1.")))
            await router.WriteImportPart(slow, w.Name, 0, new byte[w.ByteLength]);
        var others = manifest.Weights.Where(w => !w.Name.StartsWith("experts.1.")).ToList();
        for (int i = 0; i < 20; i++)
        {
            await Task.Delay(200);
            foreach (var w in others) await router.WriteImportPart(slow, w.Name, 0, new byte[w.ByteLength]); // sent again: replaces itself
        }
        Assert.Equal(1, await router.CommitImport(slow));

        var import = Guid.NewGuid();
        await router.BeginImport(import, manifest.Weights);
        var w1 = manifest.Weights.Single(w => w.Name == "experts.1.w1");
        await router.WriteImportPart(import, w1.Name, 0, new byte[w1.ByteLength]);
        // The expert holds that part; its other weights have none yet.
        var incomplete = await Assert.ThrowsAsync<InvalidOperationException>(() => expert.CheckImport(import));
        Assert.StartsWith($"import {import}: expert transfer-abandoned/1 has no part of experts.1.", incomplete.Message);

        // Its client went away: two seconds later (the timers run every 500 ms) both ends free it.
        var freed = Stopwatch.StartNew();
        InvalidOperationException? gone = null;
        while (gone is null && freed.Elapsed < TimeSpan.FromSeconds(15))
        {
            await Task.Delay(100);
            try { await expert.CheckImport(import); }
            catch (InvalidOperationException e) when (e.Message.Contains("holds no part")) { gone = e; }
            catch (InvalidOperationException) { } // not freed yet: still "has no part of experts.1.…"
        }
        Assert.NotNull(gone);
        Assert.Equal($"expert transfer-abandoned/1 holds no part of import {import} (it was reactivated since, a newer import began, or no part came within the layer's SavedForwardTimeout); begin the import again", gone.Message);
        var commit = await Assert.ThrowsAsync<InvalidOperationException>(() => router.CommitImport(import));
        Assert.Equal($"import {import} of layer \"transfer-abandoned\" is not in progress; begin it first (a newer import, a router that came back from its checkpoint, or no part within the layer's SavedForwardTimeout ends it)", commit.Message);
        Assert.Equal(1, (await router.GetWeightManifest()).Version);
        await layer.DeleteAsync();
    }
}
