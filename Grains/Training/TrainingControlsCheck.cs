namespace MoeCluster.Grains.Training;

/// <summary>Checks <see cref="TrainingControls"/> against the layer they are meant for.</summary>
public static class TrainingControlsCheck
{
    /// <summary>Throws an <see cref="ArgumentException"/> naming the first bad field and what it expects.</summary>
    public static TrainingControls Validate(TrainingControls controls, IReadOnlyList<int> expertIds, string layer)
    {
        ArgumentNullException.ThrowIfNull(controls);
        var frozen = controls.FrozenExperts ?? throw new ArgumentException("frozen experts is null; expected an array of expert indices (empty for none)");
        foreach (var e in frozen)
            if (!expertIds.Contains(e))
                throw new ArgumentException($"frozen expert {e} does not exist; layer \"{layer}\" has experts {ExpertSetPlan.Describe(expertIds)}");
        if (controls.RouterLearningRate is { } lr && (!double.IsFinite(lr) || lr <= 0))
            throw new ArgumentException($"router learning rate is {lr}; expected a finite number > 0 (freeze the router to stop it training)");
        var multipliers = controls.ExpertLearningRateMultipliers
            ?? throw new ArgumentException("expert learning-rate multipliers are null; expected a map of expert index to factor (empty for none)");
        foreach (var (e, m) in multipliers)
        {
            if (!expertIds.Contains(e))
                throw new ArgumentException($"learning-rate multiplier for expert {e}, which does not exist; layer \"{layer}\" has experts {ExpertSetPlan.Describe(expertIds)}");
            if (!double.IsFinite(m) || m <= 0)
                throw new ArgumentException($"learning-rate multiplier of expert {e} is {m}; expected a finite number > 0 (freeze the expert to stop it training)");
        }
        return controls;
    }
}
