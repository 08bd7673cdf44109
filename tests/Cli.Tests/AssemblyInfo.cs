using Xunit;

// These tests start silo processes and time failure detection; on a 2-core machine, classes
// running side by side starve each other's silos into false death declarations.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
