using System.CommandLine;
using System.Text;

namespace MoeCluster.Cli.Lm;

/// <summary><c>./moe lm train | sweep | generate | bench</c>: the byte-level Switch Transformer language model on the cluster.</summary>
public static class LmCommand
{
    public static Command Create() => new("lm", "A byte-level Switch Transformer language model, its MoE layers on the cluster, trained on Debian's fortunes.\n\n" +
        "Example: ./moe lm train --steps 2000 --experts 8\n" + ExitCodes.Help)
    {
        Train(), Sweep(), Generate(), Evaluate(), Bench(),
    };

    private static Command Train()
    {
        var model = new LmModelOptions();
        var steps = new Option<int>("--steps") { Description = "Train up to this step", DefaultValueFactory = _ => new LmTrainOptions().Steps };
        var experts = new Option<int>("--experts") { Description = "Experts per MoE layer (0: the dense baseline)", DefaultValueFactory = _ => new LmConfig().Experts };
        var seed = new Option<long>("--seed") { Description = "Seed of the weights and of the data order", DefaultValueFactory = _ => 1 };
        var run = new Option<string>("--run") { Description = "The run's directory (checkpoint, store, model, plot)", DefaultValueFactory = _ => new LmTrainOptions().Run };
        var resume = new Option<bool>("--resume") { Description = "Continue the run in --run from its checkpoint (its model and settings)" };
        var inProcess = new Option<bool>("--in-process") { Description = "Compute the MoE layers in this process instead of on a cluster" };
        var json = new Option<bool>("--json") { Description = "Print only a JSON summary on stdout" };
        var viaGateways = ViaGatewaysOption();
        var connection = new ClusterConnection(embeddedByDefault: true);
        var command = new Command("train", "Trains the model with a progress bar, a validation loss every --eval-every steps and a checkpoint every " +
            "--checkpoint-every; writes model.safetensors, loss.png and summary.json into --run.\n\n" +
            "Example: ./moe lm train --steps 2000 --experts 8 --run runs/e8\n" +
            "Resume after a crash: ./moe lm train --run runs/e8 --resume\n" + ExitCodes.Help)
        { steps, experts, seed, run, resume, inProcess, json, viaGateways };
        model.AddTo(command);
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await LmTrainer.RunAsync(model.Options(parse, parse.GetValue(experts), parse.GetValue(seed), parse.GetValue(steps), parse.GetValue(inProcess)) with
            {
                Run = parse.GetValue(run)!,
                Resume = parse.GetValue(resume),
                Json = parse.GetValue(json),
                Cluster = parse.GetValue(connection.Cluster) is not null ? connection.Options(parse) : null,
                ViaGateways = parse.GetValue(viaGateways),
            }, cancel);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Sweep()
    {
        var model = new LmModelOptions();
        var experts = new Option<string>("--experts") { Description = "Expert counts, comma-separated (0: dense)", DefaultValueFactory = _ => "0,2,4,8,16" };
        var seeds = new Option<string>("--seeds") { Description = "Seeds, comma-separated; the table shows medians over them", DefaultValueFactory = _ => "1" };
        var steps = new Option<int>("--steps") { Description = "Steps of every run", DefaultValueFactory = _ => new LmTrainOptions().Steps };
        var dir = new Option<string>("--dir") { Description = "Directory of the runs, sweep.png and sweep.json", DefaultValueFactory = _ => "lm-sweep" };
        var json = new Option<bool>("--json") { Description = "Print only a JSON summary on stdout" };
        var resume = new Option<bool>("--resume") { Description = "Go on with the sweep in --dir: keep its finished runs, resume an interrupted one, train the rest (more seeds may be added)" };
        var command = new Command("sweep", "Trains the model once per expert count and seed with the same data, seed by seed, then tables and plots validation loss against step.\n\n" +
            "Example: ./moe lm sweep --experts 0,2,4,8,16 --seeds 1,2,3 --steps 2000\n" +
            "Go on after an interruption: the same command with --resume\n" + ExitCodes.Help)
        { experts, seeds, steps, dir, json, resume };
        model.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            var counts = LmModelOptions.ParseList(parse.GetValue(experts)!, "--experts", 0).Select(e => (int)e).ToArray();
            if (counts.Contains(1)) throw new ArgumentException("--experts has 1; expected 0 (dense) or at least 2");
            var seedList = LmModelOptions.ParseList(parse.GetValue(seeds)!, "--seeds", 0);
            var template = model.Options(parse, counts[0], seedList[0], parse.GetValue(steps), inProcess: false);
            await LmSweep.RunAsync(counts, seedList, template, parse.GetValue(dir)!, parse.GetValue(json), cancel, parse.GetValue(resume));
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Generate()
    {
        var file = new Option<string>("--model") { Description = "The model.safetensors that lm train wrote", DefaultValueFactory = _ => Path.Combine(new LmTrainOptions().Run, "model.safetensors") };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue", Required = true };
        var bytes = new Option<int>("--bytes") { Description = "Bytes to sample", DefaultValueFactory = _ => 200 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature (0: always the most likely byte)", DefaultValueFactory = _ => 0.8 };
        var topK = new Option<int>("--top-k") { Description = "Sample from the k most likely bytes only (0: all)", DefaultValueFactory = _ => 0 };
        var seed = new Option<long>("--seed") { Description = "Seed of the draws", DefaultValueFactory = _ => 1 };
        var command = new Command("generate", "Continues a prompt with bytes sampled from a trained model (its MoE layers computed in this process; no cluster needed).\n\n" +
            "Example: ./moe lm generate --model lm-run/model.safetensors --prompt \"The meaning of life is\"\n" + ExitCodes.Help)
        { file, prompt, bytes, temperature, topK, seed };
        command.SetAction(parse =>
        {
            using var model = LmExport.Load(parse.GetValue(file)!);
            var text = parse.GetValue(prompt)!;
            var sampled = LmSampler.Sample(model, Encoding.UTF8.GetBytes(text), parse.GetValue(bytes), parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(seed));
            Console.WriteLine(text + LmSampler.Text(sampled));
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Evaluate()
    {
        var file = new Option<string>("--model") { Description = "The model.safetensors that lm train wrote", DefaultValueFactory = _ => Path.Combine(new LmTrainOptions().Run, "model.safetensors") };
        var windows = new Option<int>("--eval-windows") { Description = "Validation windows, spread over the held-out text", DefaultValueFactory = _ => new LmTrainSettings().EvalWindows };
        var batch = new Option<int>("--batch") { Description = "Windows per forward", DefaultValueFactory = _ => new LmTrainSettings().Batch };
        var text = new Option<string>("--text") { Description = "The directory of the fortunes text", DefaultValueFactory = _ => FortuneText.DefaultDirectory };
        var json = new Option<bool>("--json") { Description = "Print only a JSON object on stdout" };
        var command = new Command("eval", "The validation loss of an exported model, its MoE layers computed in this process (the windows lm train validates on).\n\n" +
            "Example: ./moe lm eval --model lm-run/model.safetensors\n" + ExitCodes.Help)
        { file, windows, batch, text, json };
        command.SetAction(parse =>
        {
            using var model = LmExport.Load(parse.GetValue(file)!);
            var data = FortuneText.Load(model.Config.Context, model.Config.Seed, parse.GetValue(text)!);
            var loss = LmSession.ValidationLoss(model, data, parse.GetValue(windows), parse.GetValue(batch));
            if (parse.GetValue(json)) CliJson.Print(new { ValidationLoss = loss, Windows = Math.Min(parse.GetValue(windows), data.ValidationWindows) });
            else Console.WriteLine($"validation loss {loss:F6} nats per byte over {Math.Min(parse.GetValue(windows), data.ValidationWindows)} windows");
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Option<bool> ViaGatewaysOption() => new("--via-gateways")
    {
        Description = "Reach the embedded silos through their gateways (loopback TCP, as remote silos) instead of the first silo's co-hosted client",
    };

    private static Command Bench()
    {
        var model = new LmModelOptions();
        var experts = new Option<int>("--experts") { Description = "Experts per MoE layer", DefaultValueFactory = _ => new LmConfig().Experts };
        var rounds = new Option<int>("--rounds") { Description = "Timed rounds per setup, alternating (after one warm-up round each)", DefaultValueFactory = _ => 3 };
        var perRound = new Option<int>("--steps-per-round") { Description = "Training steps per round", DefaultValueFactory = _ => 10 };
        var json = new Option<bool>("--json") { Description = "Print only a JSON summary on stdout" };
        var viaGateways = ViaGatewaysOption();
        var command = new Command("bench", "Training tokens/s of the model with its MoE layers on an embedded cluster against the same layers computed in this process, in one run.\n\n" +
            "Example: ./moe lm bench --experts 8 --rounds 3 --steps-per-round 10\n" + ExitCodes.Help)
        { experts, rounds, perRound, json, viaGateways };
        model.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            var template = model.Options(parse, parse.GetValue(experts), 1, 1, inProcess: false) with { ViaGateways = parse.GetValue(viaGateways) };
            var summary = await LmBench.RunAsync(template, parse.GetValue(rounds), parse.GetValue(perRound), parse.GetValue(json), cancel);
            return ExitCodes.Ok;
        });
        return command;
    }
}
