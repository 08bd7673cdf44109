namespace MoeCluster.Grains.Training;

/// <summary>Checks <see cref="TrainingControls"/> against the layer they are meant for.</summary>
public static class TrainingControlsCheck
{
    /// <summary>Throws an <see cref="ArgumentException"/> naming the first bad field and what it expects.</summary>
    public static TrainingControls Validate(TrainingControls controls, int numExperts, string layer)
    {
        ArgumentNullException.ThrowIfNull(controls);
        var frozen = controls.FrozenExperts ?? throw new ArgumentException("frozen experts is null; expected an array of expert indices (empty for none)");
        foreach (var e in frozen)
            if (e < 0 || e >= numExperts)
                throw new ArgumentException($"frozen expert {e} does not exist; layer \"{layer}\" has experts 0..{numExperts - 1}");
        if (controls.RouterLearningRate is { } lr && (!double.IsFinite(lr) || lr <= 0))
            throw new ArgumentException($"router learning rate is {lr}; expected a finite number > 0 (freeze the router to stop it training)");
        var multipliers = controls.ExpertLearningRateMultipliers
            ?? throw new ArgumentException("expert learning-rate multipliers are null; expected a map of expert index to factor (empty for none)");
        foreach (var (e, m) in multipliers)
        {
            if (e < 0 || e >= numExperts)
                throw new ArgumentException($"learning-rate multiplier for expert {e}, which does not exist; layer \"{layer}\" has experts 0..{numExperts - 1}");
            if (!double.IsFinite(m) || m <= 0)
                throw new ArgumentException($"learning-rate multiplier of expert {e} is {m}; expected a finite number > 0 (freeze the expert to stop it training)");
        }
        return controls;
    }
}
