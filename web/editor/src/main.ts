// Kiln's web editor: sign in, pick a project and scene, edit it with others.
// Routes (the URL's hash): #/ the projects; #/p/<project>/<scene> the editor.
import { editorView } from './editor.js'
import { pickerView } from './picker.js'
import { current, signInView, signOut } from './session.js'

const app = document.getElementById('app')!

function route(): void {
  const s = current()
  if (!s) {
    app.replaceChildren(signInView(() => route()))
    return
  }
  const m = /^#\/p\/([A-Za-z0-9_-]{1,64})\/([A-Za-z0-9_-]{1,64})$/.exec(location.hash)
  if (m) {
    // A new page per scene: the editor's connection and listeners go with it.
    if (app.dataset.scene !== `${m[1]}/${m[2]}`) {
      if (app.dataset.scene) return location.reload()
      app.dataset.scene = `${m[1]}/${m[2]}`
      app.replaceChildren(editorView(s, m[1]!, m[2]!))
    }
    return
  }
  if (app.dataset.scene) return location.reload()
  app.replaceChildren(
    pickerView(s, () => {
      signOut()
      route()
    }),
  )
}

window.addEventListener('hashchange', route)
route()
