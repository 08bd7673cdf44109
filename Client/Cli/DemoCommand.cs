using System.CommandLine;

namespace MoeCluster.Cli;

public static class DemoCommand
{
    public static Command Create()
    {
        var d = new DemoOptions();
        var steps = new Option<int>("--steps") { Description = "Optimizer steps to train", DefaultValueFactory = _ => d.Steps };
        var experts = new Option<int>("--experts") { Description = "Experts in the MoE layer", DefaultValueFactory = _ => d.Experts };
        var topK = new Option<int>("--top-k") { Description = "Experts per token", DefaultValueFactory = _ => d.TopK };
        var silos = new Option<int>("--silos") { Description = "Silos of the embedded cluster", DefaultValueFactory = _ => d.Silos };
        var perDevice = new Option<int>("--experts-per-device") { Description = "Expert slots per device on each silo", DefaultValueFactory = _ => d.ExpertsPerDevice };
        var batch = new Option<int>("--batch") { Description = "Tokens per step", DefaultValueFactory = _ => d.BatchTokens };
        var seed = new Option<long>("--seed") { Description = "Seed of weights and data", DefaultValueFactory = _ => d.Seed };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Steps between the layer's checkpoints (1: every step)", DefaultValueFactory = _ => d.CheckpointEvery };
        var json = new Option<bool>("--json") { Description = "Print only a JSON summary (initial_loss, final_loss, steps, experts, silos, …) on stdout" };
        // Without --cluster the demo starts its own silos; with it, it trains against running ones.
        var connection = new ClusterConnection(embeddedByDefault: true);
        var layer = new Option<string>("--layer") { Description = "Name of the demo's layer", DefaultValueFactory = _ => d.Layer };
        var export = new Option<string?>("--export") { Description = "Write the trained layer as a safetensors file when training ends" };
        var plots = new Option<string>("--plots") { Description = "Directory for the PNG plots of the loss and of tokens per expert over steps", DefaultValueFactory = _ => d.Plots! };
        var noPlots = new Option<bool>("--no-plots") { Description = "Write no plots" };
        var keep = new Option<bool>("--keep") { Description = "With --cluster: leave the layer in the cluster (it is deleted by default)" };
        var lr = new Option<double>("--lr") { Description = "Learning rate of the layer and of the local embedding and head", DefaultValueFactory = _ => d.LearningRate };
        var capacity = new Option<double>("--capacity-factor") { Description = "The layer's capacity factor in training (0: dropless)", DefaultValueFactory = _ => d.CapacityFactor };
        var dropout = new Option<double>("--expert-dropout") { Description = "Dropout inside the experts, in training only (the Switch fine-tuning recipe: 0.4)", DefaultValueFactory = _ => d.ExpertDropout };
        var init = new Option<string?>("--init") { Description = "Fine-tune: start from a file that --export wrote (the layer, and NAME.local.safetensors beside it)" };
        var inspect = new Option<bool>("--inspect") { Description = "After training, show per expert the classes and tokens it receives on fresh tokens" };
        var plot = new Option<string?>("--plot") { Description = "Write the heat map of classes per expert as a PNG file" };
        var controls = new TrainingControlOptions();
        var command = new Command("demo", "Starts a cluster in this process and trains a small MoE model on a synthetic task.\n\n" +
            "Example: ./moe demo --steps 100 --experts 8 --top-k 2\n" +
            "Against running silos: ./moe demo --cluster redis://127.0.0.1:6379 --export demo.safetensors\n" +
            "Fine-tune: ./moe demo --init demo.safetensors --capacity-factor 2 --expert-dropout 0.4 --freeze-router --steps 50")
        {
            steps, experts, topK, silos, perDevice, batch, seed, checkpointEvery, json, layer, export, keep, lr, capacity, dropout, init, inspect, plot, plots, noPlots,
        };
        connection.AddTo(command);
        controls.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await DemoRunner.RunAsync(new DemoOptions
            {
                Steps = parse.GetValue(steps),
                Experts = parse.GetValue(experts),
                TopK = parse.GetValue(topK),
                Silos = parse.GetValue(silos),
                ExpertsPerDevice = parse.GetValue(perDevice),
                BatchTokens = parse.GetValue(batch),
                Seed = parse.GetValue(seed),
                CheckpointEvery = parse.GetValue(checkpointEvery),
                Json = parse.GetValue(json),
                Cluster = parse.GetValue(connection.Cluster) is not null ? connection.Options(parse) : null,
                Layer = parse.GetValue(layer)!,
                Export = parse.GetValue(export),
                Keep = parse.GetValue(keep),
                LearningRate = parse.GetValue(lr),
                CapacityFactor = parse.GetValue(capacity),
                ExpertDropout = parse.GetValue(dropout),
                Init = parse.GetValue(init),
                Controls = controls.Controls(parse),
                Inspect = parse.GetValue(inspect),
                Plot = parse.GetValue(plot),
                Plots = parse.GetValue(noPlots) ? null : parse.GetValue(plots),
            }, cancel);
            return 0;
        });
        return command;
    }
}
