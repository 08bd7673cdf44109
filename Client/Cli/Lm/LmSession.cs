using System.Diagnostics;
using MoeCluster.Client;
using MoeCluster.Grains.Compute;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Cli.Lm;

/// <summary>
/// One model being trained: its cluster (embedded, or the caller's), its MoE layers, the local
/// model and its AdamW, and the step it is at. <see cref="LmTrainer"/> drives one in a loop;
/// the LM benchmark drives two side by side.
/// </summary>
public sealed class LmSession : IAsyncDisposable
{
    private readonly EmbeddedCluster? embedded;
    private readonly MoeClusterClient? client;
    private readonly optim.Optimizer optimizer;
    // The model's forward and backward block their thread for every call to the cluster (the
    // autograd engine is synchronous). On a thread of their own they leave the thread pool,
    // which Orleans' messages and the embedded silos run on, whole.
    private readonly ComputeQueue trainer;

    private LmSession(LmTrainOptions options, FortuneText text, EmbeddedCluster? embedded, MoeClusterClient? client,
        SwitchLm model, Dictionary<string, RemoteMoeLayer> layers)
    {
        Options = options;
        Text = text;
        this.embedded = embedded;
        this.client = client;
        Model = model;
        Layers = layers;
        optimizer = optim.AdamW(model.parameters(), Settings.LearningRate, Settings.Optimizer.Beta1, Settings.Optimizer.Beta2,
            Settings.Optimizer.Epsilon, Settings.Optimizer.WeightDecay);
        trainer = new ComputeQueue("lm-trainer", options.Threads ?? 0);
    }

    public LmTrainOptions Options { get; }
    public LmConfig Config => Options.Config;
    public LmTrainSettings Settings => Options.Settings;
    public FortuneText Text { get; }
    public SwitchLm Model { get; }
    /// <summary>The cluster layers by name (none for a dense model or in-process MoE).</summary>
    public IReadOnlyDictionary<string, RemoteMoeLayer> Layers { get; }
    public long Step { get; private set; }
    public LmHistory History { get; private set; } = new();
    public string CheckpointPath => LmCheckpoint.PathIn(Options.Run);
    /// <summary>Tokens each step trains on.</summary>
    public long TokensPerStep => (long)Settings.Batch * Config.Context;

    public static string LayerName(LmTrainSettings settings, int block) => $"{settings.LayerPrefix}-ffn-{block}";

    /// <summary>
    /// Builds the model and, when it has cluster layers, connects (or starts the embedded
    /// cluster on the run's store) and creates them, or with <see cref="LmTrainOptions.Resume"/>
    /// takes them back to the run's checkpoint.
    /// </summary>
    public static async Task<LmSession> StartAsync(LmTrainOptions options, Action<string> log, CancellationToken cancellationToken = default)
    {
        var checkpointPath = LmCheckpoint.PathIn(options.Run);
        LmCheckpoint? record = null;
        if (options.Resume)
        {
            if (!File.Exists(checkpointPath))
                throw new ArgumentException($"--resume: {options.Run} holds no checkpoint ({LmCheckpoint.FileName}); start the run without --resume");
            record = LmCheckpoint.Read(checkpointPath);
            options = options with { Config = record.Config, Settings = record.Settings };
        }
        else if (File.Exists(checkpointPath))
            throw new ArgumentException($"{options.Run} already holds a run (its {LmCheckpoint.FileName}); pass --resume to continue it, or choose another --run directory");
        var config = options.Config.Validate();
        var settings = options.Settings.Validate();
        if (options.ViaGateways && (options.Cluster is not null || settings.InProcess || config.Experts == 0))
            throw new ArgumentException("--via-gateways is for the embedded cluster's MoE layers; " +
                (options.Cluster is not null ? "with --cluster the trainer always connects through the gateways" : "this run has no MoE layers on a cluster"));
        if (options.Threads is { } threads)
        {
            if (threads < 1) throw new ArgumentException($"--threads is {threads}; expected at least 1");
            set_num_threads(threads);
        }
        var text = FortuneText.Load(config.Context, config.Seed, options.TextDirectory);
        if (options.Steps < 1 || options.Steps > text.MaxSteps(settings.Batch))
            throw new ArgumentException($"--steps is {options.Steps}; with --batch {settings.Batch} and --context {config.Context} one epoch of the " +
                $"training text ({text.TrainWindows:N0} windows) allows 1 to {text.MaxSteps(settings.Batch)} steps");
        if (record is not null && record.Step >= options.Steps)
            throw new ArgumentException($"the run in {options.Run} is at step {record.Step} already; pass --steps above it to train further");
        Directory.CreateDirectory(options.Run);

        var moeBlocks = config.MoeBlocks.ToList();
        EmbeddedCluster? embedded = null;
        MoeClusterClient? client = null;
        var layers = new Dictionary<string, RemoteMoeLayer>();
        try
        {
            if (moeBlocks.Count > 0 && !settings.InProcess)
            {
                if (options.Cluster is { } external) client = await MoeClusterClient.ConnectAsync(external, cancellationToken);
                else
                {
                    var experts = config.Experts * moeBlocks.Count;
                    log($"starting {options.Silos} silo(s) in this process for {experts} experts, checkpoints in {Path.Combine(options.Run, "store")}");
                    embedded = await EmbeddedCluster.StartAsync(options.Silos, (experts + options.Silos - 1) / options.Silos, cancellationToken,
                        store: Path.Combine(options.Run, "store"));
                    // The silos run in this process: calls through the first one's own client skip a
                    // loopback connection and two copies of every activation (see `./moe lm bench --via-gateways`).
                    client = options.ViaGateways
                        ? await MoeClusterClient.ConnectAsync(new MoeClientOptions { ClusterId = embedded.ClusterId, GatewayPorts = embedded.GatewayPorts }, cancellationToken)
                        : MoeClusterClient.FromClusterClient(embedded.CoHostedClient);
                    log(options.ViaGateways ? $"calling the silos through their gateways (ports {string.Join(", ", embedded.GatewayPorts)})"
                        : "calling the silos through the first silo's co-hosted client");
                }
                foreach (var block in moeBlocks)
                {
                    var name = LayerName(settings, block);
                    var spec = config.LayerSpec(block, settings.Optimizer, settings.CheckpointEvery);
                    layers[name] = record is null ? await CreateFresh(client, name, spec, log) : await Restore(client, name, spec, record, log);
                }
            }
            var model = new SwitchLm(config, block => !config.IsMoe(block) ? new DenseFfn(config.DModel, config.DFF)
                : settings.InProcess ? new InProcessMoeFfn(config.LayerSpec(block, settings.Optimizer, settings.CheckpointEvery), LayerName(settings, block))
                : new ClusterMoeFfn(layers[LayerName(settings, block)]));
            var session = new LmSession(options, text, embedded, client, model, layers);
            if (record is not null)
            {
                LmCheckpoint.Restore(checkpointPath, model, session.optimizer);
                session.Step = record.Step;
                session.History = record.History;
                log($"resumed {options.Run} at step {record.Step} of {options.Steps}");
            }
            return session;
        }
        catch
        {
            if (client is not null) await client.DisposeAsync();
            if (embedded is not null) await embedded.DisposeAsync();
            throw;
        }
    }

    private static async Task<RemoteMoeLayer> CreateFresh(MoeClusterClient client, string name, LayerSpec spec, Action<string> log)
    {
        if (await client.Orleans.GetGrain<IMoeRouterGrain>(name).GetSpec() is not null)
        {
            // A fresh run starts its layers fresh: an earlier run's layer of this name goes.
            log($"deleting layer \"{name}\" left by an earlier run");
            await (await client.GetLayerAsync(name)).DeleteAsync();
        }
        return await client.CreateLayerAsync(name, spec);
    }

    private static async Task<RemoteMoeLayer> Restore(MoeClusterClient client, string name, LayerSpec spec, LmCheckpoint record, Action<string> log)
    {
        if (!record.LayerVersions.TryGetValue(name, out var version))
            throw new ArgumentException($"the run's checkpoint names no layer \"{name}\"; it has {string.Join(", ", record.LayerVersions.Keys)}");
        RemoteMoeLayer layer;
        try { layer = await client.GetLayerAsync(name); }
        catch (InvalidOperationException e)
        {
            throw new InvalidOperationException($"cannot resume: {e.Message} (the cluster's checkpoint store lost the run's layers?)", e);
        }
        if (layer.Spec != spec)
            throw new InvalidOperationException($"cannot resume: layer \"{name}\" in the cluster has another spec than the run's checkpoint");
        var was = await layer.GetVersionAsync();
        await layer.RestoreAsync(version);
        log($"layer \"{name}\": version {was} → {version}, the run's checkpoint");
        return layer;
    }

    /// <summary>Trains step <see cref="Step"/> + 1: forward, backward, this process's AdamW, then every layer's step.</summary>
    public async Task<double> TrainStepAsync()
    {
        var step = Step + 1;
        var watch = Stopwatch.StartNew();
        var loss = await trainer.RunAsync(() =>
        {
            Model.train();
            double loss;
            using (var scope = NewDisposeScope())
            {
                var (inputs, targets) = Text.TrainBatch(step, Settings.Batch);
                var logits = Model.forward(inputs);
                var ce = nn.functional.cross_entropy(logits.view(-1, LmConfig.Vocabulary), targets.view(-1));
                loss = ce.item<float>();
                ce.add(Model.AuxLoss()).backward();
            }
            optimizer.step();
            optimizer.zero_grad();
            return loss;
        });
        await Task.WhenAll(Layers.Values.Select(l => l.StepAsync(step)));
        Step = step;
        History.Train.Add(loss);
        History.TrainSeconds += watch.Elapsed.TotalSeconds;
        return loss;
    }

    /// <summary>The mean next-byte cross-entropy over the validation windows, in eval mode (eval capacity, nothing saved).</summary>
    public async Task<double> EvaluateAsync()
    {
        var loss = await trainer.RunAsync(() => ValidationLoss(Model, Text, Settings.EvalWindows, Settings.Batch));
        History.Validation.Add(new LmValidationPoint(Step, loss));
        return loss;
    }

    /// <summary>The mean next-byte cross-entropy (nats) of <paramref name="model"/> over <paramref name="windows"/> validation windows.</summary>
    public static double ValidationLoss(SwitchLm model, FortuneText text, int windows, int batch)
    {
        var training = model.training;
        model.eval();
        double sum = 0;
        long count = 0;
        foreach (var (inputs, targets) in text.ValidationBatches(windows, batch))
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var logits = model.forward(inputs);
            sum += nn.functional.cross_entropy(logits.view(-1, LmConfig.Vocabulary), targets.view(-1), reduction: nn.Reduction.Sum).item<float>();
            count += targets.numel();
        }
        model.train(training);
        return sum / count;
    }

    /// <summary>
    /// Makes the layers' checkpoints of this step durable, then writes the run's record naming
    /// them. Only at the layers' checkpoint steps (multiples of --checkpoint-every), where the
    /// store holds their state.
    /// </summary>
    public async Task WriteCheckpointAsync()
    {
        if (Step % Settings.CheckpointEvery != 0)
            throw new InvalidOperationException($"step {Step} is not a checkpoint step (every {Settings.CheckpointEvery})");
        var durable = await Task.WhenAll(Layers.Values.Select(l => l.FlushAsync()));
        foreach (var (name, version) in Layers.Keys.Zip(durable))
            if (version != Step) throw new InvalidOperationException($"layer \"{name}\" is durable at version {version}, not at step {Step}");
        new LmCheckpoint(Config, Settings, Step, Layers.Keys.ToDictionary(n => n, _ => Step), History).Write(CheckpointPath, Model, optimizer);
    }

    /// <summary>Writes the whole model, cluster layers included, as one safetensors file (<see cref="LmExport"/>).</summary>
    public Task<string> ExportAsync(string path) => LmExport.WriteAsync(path, Model, Step);

    public async ValueTask DisposeAsync()
    {
        trainer.Dispose();
        optimizer.Dispose();
        Model.Dispose();
        if (client is not null)
        {
            if (embedded is not null) await Task.WhenAll(Layers.Values.Select(l => l.FlushAsync()));
            await client.DisposeAsync();
        }
        if (embedded is not null) await embedded.DisposeAsync();
    }
}
