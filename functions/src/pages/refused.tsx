/** The page a refused form post or a page outside one's scopes gets: what happened and what to do. */
import { Layout, type SignedIn } from "./layout.tsx";

export function RefusedPage(props: { reason: string; signedIn?: SignedIn | null }) {
  return (
    <Layout title="Refused" signedIn={props.signedIn ?? null}>
      <h1>Refused</h1>
      <p class="notice error" data-testid="refusal">
        {props.reason}.
      </p>
      <p>
        Nothing was changed. Reload the page you came from and try again, or <a href="/sign-in">sign in</a>{" "}
        with a key that may do this.
      </p>
    </Layout>
  );
}
