using Orleans.Networking.Shared;
using Orleans.Runtime.Messaging;

namespace MoeCluster.Client;

/// <summary>
/// Which failures mean "a silo (or the connection to it) was lost" — worth waiting out and
/// replaying — as opposed to a refused call, which is the caller's to see.
/// </summary>
public static class TransientFailures
{
    public static bool IsTransient(Exception e) => e switch
    {
        AggregateException a => a.InnerExceptions.Any(IsTransient),
        OrleansMessageRejectionException => true, // includes SiloUnavailableException
        ExpertStateLostException => true,         // an expert came back without the step's state
        RouterStateLostException => true,         // the router came back without the step's state
        ConnectionFailedException or SocketConnectionException or GatewayTooBusyException => true,
        ClientNotAvailableException => true,
        // Orleans' own response timeout; not its subclasses, such as a store's timeout (that is a failed write).
        TimeoutException t when t.GetType() == typeof(TimeoutException) => true,
        OperationCanceledException => true, // the SDK's own cancellation: a gateway connection was lost
        _ => e.InnerException is { } inner && IsTransient(inner),
    };

    /// <summary>An expert or the router lost its state or came back at another version: only a recovery helps, not a repeat.</summary>
    public static bool IsStateLost(Exception e) => e switch
    {
        ExpertStateLostException or RouterStateLostException => true,
        AggregateException a => a.InnerExceptions.Any(IsStateLost),
        _ => e.InnerException is { } inner && IsStateLost(inner),
    };
}
