using System.Text;
using static TorchSharp.torch;

namespace MoeCluster.Cli.Lm;

/// <summary>
/// The language model's text: every fortune of Debian's <c>fortunes</c> package (about 2.5 MB of
/// English nobody here wrote), as bytes. Fortunes are split 90/10 into training and validation by
/// their position (every tenth is held out), so both halves cover every topic file. The training
/// text is cut into windows of context + 1 bytes, visited in an order fixed by the seed; a step
/// takes the next <c>batch</c> windows, so a run stays within one epoch and its data position is
/// its step.
/// </summary>
public sealed class FortuneText
{
    public const string DefaultDirectory = "/usr/share/games/fortunes";
    private static readonly byte[] Separator = "%\n"u8.ToArray();

    private readonly int[] order;

    private FortuneText(byte[] train, byte[] validation, int context, long seed, string directory, int fortunes)
    {
        Train = train;
        Validation = validation;
        Context = context;
        Directory = directory;
        Fortunes = fortunes;
        order = Enumerable.Range(0, (train.Length - 1) / context).ToArray();
        new Random(unchecked((int)seed ^ (int)(seed >> 32))).Shuffle(order);
    }

    public byte[] Train { get; }
    public byte[] Validation { get; }
    public int Context { get; }
    public string Directory { get; }
    public int Fortunes { get; }
    /// <summary>Training windows in one epoch.</summary>
    public int TrainWindows => order.Length;
    public int ValidationWindows => (Validation.Length - 1) / Context;

    /// <summary>Reads every fortune file (the plain-text ones, not <c>.dat</c> indexes or <c>.u8</c> links) in name order.</summary>
    public static FortuneText Load(int context, long seed, string directory = DefaultDirectory)
    {
        if (context < 2) throw new ArgumentException($"--context is {context}; expected at least 2");
        if (!System.IO.Directory.Exists(directory))
            throw new ArgumentException($"the fortunes text is missing: no directory {directory}; install Debian's fortunes package (./moe lm installs it when it can)");
        var files = System.IO.Directory.GetFiles(directory)
            .Where(f => Path.GetExtension(f) is not (".dat" or ".u8") && new FileInfo(f).LinkTarget is null)
            .Order(StringComparer.Ordinal).ToList();
        var train = new MemoryStream();
        var validation = new MemoryStream();
        int index = 0;
        foreach (var file in files)
        {
            var text = File.ReadAllText(file, Encoding.UTF8).Replace("\r\n", "\n");
            foreach (var fortune in text.Split("\n%\n"))
            {
                var body = fortune.Trim('\n', '%');
                if (body.Length == 0) continue;
                var target = index++ % 10 == 9 ? validation : train;
                target.Write(Encoding.UTF8.GetBytes(body + "\n"));
                target.Write(Separator);
            }
        }
        if (index == 0) throw new ArgumentException($"{directory} holds no fortunes; expected the text files of Debian's fortunes package");
        var result = new FortuneText(train.ToArray(), validation.ToArray(), context, seed, directory, index);
        if (result.TrainWindows < 1 || result.ValidationWindows < 1)
            throw new ArgumentException($"the fortunes in {directory} are too short for --context {context}");
        return result;
    }

    /// <summary>The most steps of <paramref name="batch"/> windows that stay within one epoch.</summary>
    public int MaxSteps(int batch) => TrainWindows / batch;

    /// <summary>Inputs and next-byte targets of step <paramref name="step"/> (1-based), each [batch, context] Int64.</summary>
    public (Tensor Inputs, Tensor Targets) TrainBatch(long step, int batch)
    {
        if (step < 1 || step > MaxSteps(batch))
            throw new ArgumentException($"step {step} with --batch {batch} is past one epoch of the training text ({MaxSteps(batch)} steps of {TrainWindows:N0} windows)");
        var starts = Enumerable.Range(0, batch).Select(b => (long)order[(step - 1) * batch + b] * Context);
        return Windows(Train, starts.ToArray());
    }

    /// <summary><paramref name="count"/> validation windows spread evenly over the held-out text, in batches of <paramref name="batch"/>.</summary>
    public IEnumerable<(Tensor Inputs, Tensor Targets)> ValidationBatches(int count, int batch)
    {
        if (count < 1 || batch < 1) throw new ArgumentException($"--eval-windows {count} and --batch {batch}: expected at least 1 each");
        count = Math.Min(count, ValidationWindows);
        var starts = Enumerable.Range(0, count).Select(j => (long)j * ValidationWindows / count * Context).ToArray();
        for (int i = 0; i < starts.Length; i += batch)
            yield return Windows(Validation, starts[i..Math.Min(starts.Length, i + batch)]);
    }

    private (Tensor Inputs, Tensor Targets) Windows(byte[] text, long[] starts)
    {
        var inputs = new long[starts.Length * Context];
        var targets = new long[starts.Length * Context];
        for (int b = 0; b < starts.Length; b++)
            for (int t = 0; t < Context; t++)
            {
                inputs[b * Context + t] = text[starts[b] + t];
                targets[b * Context + t] = text[starts[b] + t + 1];
            }
        return (tensor(inputs, [starts.Length, Context]), tensor(targets, [starts.Length, Context]));
    }
}
