using MoeCluster.Silo;

return await SiloCommand.Create().Parse(args).InvokeAsync();
