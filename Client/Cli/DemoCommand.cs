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
        var json = new Option<bool>("--json") { Description = "Print only a JSON summary (initial_loss, final_loss, steps, experts, silos, …) on stdout" };
        var command = new Command("demo", "Starts a cluster in this process and trains a small MoE model on a synthetic task.\n\n" +
            "Example: ./moe demo --steps 100 --experts 8 --top-k 2")
        {
            steps, experts, topK, silos, perDevice, batch, seed, json,
        };
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
                Json = parse.GetValue(json),
            }, cancel);
            return 0;
        });
        return command;
    }
}
