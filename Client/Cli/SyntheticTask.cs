using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Cli;

/// <summary>
/// The demo's task: tokens of four kinds (ids 0–15 digits, 16–31 letters, 32–47 punctuation,
/// 48–63 symbols), each token labelled with one of 8 classes by a rule of its own kind. A model
/// learns it per token; experts can specialise by kind because each kind follows its own rule.
/// </summary>
public static class SyntheticTask
{
    public const int KindSize = 16;
    public static readonly string[] Kinds = ["digits", "letters", "punctuation", "symbols"];
    public static int Vocabulary => Kinds.Length * KindSize;
    public const int Classes = 8;

    public static int KindOf(long token) => (int)(token / KindSize);

    /// <summary>A token id with the first letter of its kind, as reports show it: "17l" (a letter).</summary>
    public static string TokenName(int token) => token >= 0 && token < Vocabulary ? $"{token}{Kinds[KindOf(token)][0]}" : $"{token}";

    public static long Label(long token)
    {
        var j = token % KindSize;
        return KindOf(token) switch
        {
            0 => j % 8,
            1 => (3 * j + 1) % 8,
            2 => j / 2,
            _ => 7 - j % 8,
        };
    }

    /// <summary>A batch of uniformly drawn tokens and their labels.</summary>
    public static (Tensor Tokens, Tensor Labels) Sample(Generator generator, int size)
    {
        var tokens = randint(0, Vocabulary, [size], ScalarType.Int64, generator: generator);
        var labels = tensor(tokens.data<long>().ToArray().Select(Label).ToArray());
        return (tokens, labels);
    }
}
