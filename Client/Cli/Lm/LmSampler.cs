using System.Text;
using MoeCluster.Grains.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Cli.Lm;

/// <summary>Samples bytes from a trained model, one at a time, from the last context bytes.</summary>
public static class LmSampler
{
    /// <summary>
    /// <paramref name="count"/> bytes after <paramref name="prompt"/>: temperature 0 takes the most
    /// likely byte; otherwise bytes are drawn from softmax(logits / temperature), from top-k ones
    /// when <paramref name="topK"/> > 0, with <paramref name="seed"/> fixing the draws.
    /// </summary>
    public static byte[] Sample(SwitchLm model, byte[] prompt, int count, double temperature, int topK, long seed)
    {
        if (prompt.Length == 0) throw new ArgumentException("--prompt is empty; expected some text to continue");
        if (count < 1) throw new ArgumentException($"--bytes is {count}; expected at least 1");
        if (temperature < 0 || !double.IsFinite(temperature)) throw new ArgumentException($"--temperature is {temperature}; expected 0 or more");
        using var generator = new Generator((ulong)seed);
        var bytes = new List<byte>(prompt);
        model.eval();
        using var noGrad = no_grad();
        using var scale = temperature.ToScalar(); // held, not passed as a number: see HeldScalars
        for (int i = 0; i < count; i++)
        {
            using var scope = NewDisposeScope();
            var window = bytes.Skip(Math.Max(0, bytes.Count - model.Config.Context)).Select(b => (long)b).ToArray();
            var logits = model.forward(tensor(window, [1, window.Length]))[0, -1];
            long next;
            if (temperature == 0) next = logits.argmax().item<long>();
            else
            {
                var scaled = logits.div(scale);
                if (topK > 0 && topK < LmConfig.Vocabulary)
                {
                    var kth = scaled.topk(topK).values[-1];
                    scaled = scaled.masked_fill(scaled.lt(kth), HeldScalars.NegativeInfinity);
                }
                next = multinomial(nn.functional.softmax(scaled, 0), 1, generator: generator).item<long>();
            }
            bytes.Add((byte)next);
        }
        return bytes.Skip(prompt.Length).ToArray();
    }

    /// <summary>Bytes as text; a multi-byte character cut at the end shows as U+FFFD.</summary>
    public static string Text(byte[] bytes) => Encoding.UTF8.GetString(bytes);
}
